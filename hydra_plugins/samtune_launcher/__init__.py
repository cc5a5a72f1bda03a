"""samtune's Hydra launcher plugin: submitit's local and SLURM launchers, ending the sweep's MLflow
parent run FAILED with the reason when a launch fails; the SLURM one checks the request against the
cluster's nodes before it submits.

It lives here, not in `src`, because Hydra instantiates launchers only from classes it found while
scanning the `hydra_plugins` namespace package (this folder's parent has no `__init__.py`).
"""
