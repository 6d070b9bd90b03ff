"""Serve options derived from the config (no cluster needed)."""
import pytest

from deployments.app import app_from_config
from deployments.config import load_config

pytestmark = pytest.mark.timeout(60)


def engine_deployment_config(overrides):
    app = app_from_config(load_config(None, overrides))
    engine = app._bound_deployment.init_args[0]._bound_deployment  # Serve has no public accessor
    return engine._deployment_config


def test_scale_down_lets_generations_finish_past_serves_20_s_default():
    """Audit finding: Serve's 20 s graceful shutdown killed longer generations on scale-down."""
    assert engine_deployment_config({"router.request_timeout_s": 90.0}).graceful_shutdown_timeout_s == 90.0
    assert engine_deployment_config({"engine_replicas.graceful_shutdown_timeout_s": 1200.0}
                                    ).graceful_shutdown_timeout_s == 1200.0
    with pytest.raises(Exception, match="graceful_shutdown_timeout_s must be > 0"):
        load_config(None, {"engine_replicas.graceful_shutdown_timeout_s": 0})
