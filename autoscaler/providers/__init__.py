"""Provider implementations; `build_provider` picks one by the config's `provider` key.

boto3 is imported only when the AWS provider is built, so the local provider works on a box
without it."""
from __future__ import annotations

from autoscaler.config import AutoscalerConfig
from autoscaler.provider import CloudProvider


def build_provider(config: AutoscalerConfig) -> CloudProvider:
    if config.provider == "aws":
        from autoscaler.providers.aws import AwsProvider

        return AwsProvider.from_config(config)
    from autoscaler.providers.local import LocalProvider

    return LocalProvider.from_config(config)
