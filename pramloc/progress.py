"""Progress bars (tqdm), silenced by ``pramloc -q``."""

from tqdm.auto import tqdm

DISABLE = False


def track(iterable=None, desc: str = "", total: int | None = None, **kwargs):
    return tqdm(iterable, desc=desc, total=total, disable=DISABLE, leave=False, dynamic_ncols=True, **kwargs)
