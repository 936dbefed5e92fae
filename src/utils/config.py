"""Config processing between Hydra's composition and building: legacy keys, checks."""

from omegaconf import OmegaConf

from src.utils.errors import ConfigError
from src.utils.legacy import translate
from src.utils.notice import notice
from src.utils.validate import check, notice_unread_vars

# `${not:${..bidirectional}}`: the attention layers' `causal` follows `model.bidirectional`.
OmegaConf.register_new_resolver("not", lambda value: not value, replace=True)
# `${batch_by_length:${dataset.L},512,128}`: base at L <= L0, halved per doubling of L beyond it
# (zoology's MQAR batch sizes: 512 up to L 128, 256 at 256, 128 at 512).
OmegaConf.register_new_resolver("batch_by_length", lambda L, base, L0: max(1, base * L0 // max(L, L0)), replace=True)


def prepare(config):
    """Translate the legacy keys, resolve interpolations, check required values and then every key,
    type and value (src/utils/validate.py)."""
    translate(config, notice)
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise ConfigError(f"these config values must be set: {', '.join(missing)}")
    notice_unread_vars(config)
    OmegaConf.resolve(config)
    check(config)
    return config
