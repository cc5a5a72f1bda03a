"""`hydra/launcher=samtune_local|samtune_slurm`: submitit's settings, launched by this plugin's launchers."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

LAUNCHERS = "hydra_plugins.samtune_launcher.launcher"


@dataclass
class CheckedLocalQueueConf(LocalQueueConf):
    _target_: str = f"{LAUNCHERS}.CheckedLocalLauncher"


@dataclass
class CheckedSlurmQueueConf(SlurmQueueConf):
    _target_: str = f"{LAUNCHERS}.CheckedSlurmLauncher"


for name, node in (("samtune_local", CheckedLocalQueueConf()), ("samtune_slurm", CheckedSlurmQueueConf())):
    ConfigStore.instance().store(group="hydra/launcher", name=name, node=node, provider="samtune_launcher")
