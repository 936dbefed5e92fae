"""Entry point: `python -m train [overrides]`. Composes configs/ with Hydra and trains.

    python -m train wandb=null model=dlr experiment=dss-sequence1d dataset.task=shift

A ConfigError (a bad name or value) is printed as one line, `error: ...`, with exit status 2.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig

from src.utils.config import prepare
from src.utils.errors import ConfigError


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(config):
    try:
        from src.training import fit

        fit(prepare(config), HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
