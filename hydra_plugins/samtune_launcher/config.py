"""`hydra/launcher=samtune_slurm`: submitit's SLURM settings, launched by `CheckedSlurmLauncher`."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class CheckedSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.samtune_launcher.launcher.CheckedSlurmLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="samtune_slurm", node=CheckedSlurmQueueConf(), provider="samtune_launcher"
)
