"""`python -m src.prepare dataset=NAME [prepare.mode=...] [prepare.KEY=VALUE ...]`: prepare a dataset.

Fills `dataset.root` from the dataset's real source (conf/prepare/NAME.yaml says how) in the layout
`python -m src.train dataset=NAME` reads, then prints what it wrote: images and objects per split,
and every skipped input with the reason. Rerunning with the same inputs and settings does nothing.
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.cli import hydra_entry
from src.data.preparation.builder import PrepareReport
from src.errors import SamtuneError


def prepare(cfg: DictConfig) -> PrepareReport:
    try:
        return instantiate(cfg.prepare, _convert_="all")
    except InstantiationException as err:  # Hydra wraps what the target raised; a user's mistake stays one line
        cause = err.__cause__
        while cause is not None and not isinstance(cause, SamtuneError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


@hydra_entry("prepare")
def main(cfg: DictConfig) -> None:
    print(prepare(cfg).render(), flush=True)


if __name__ == "__main__":
    main()
