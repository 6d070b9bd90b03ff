"""API keys: none configured → everything passes; configured → only the right bearer key passes, with
OpenAI's 401 body; admin keys guard the status route; keys never show in reprs or error bodies."""

import pytest

from deployments.auth import ApiKeys, keys_from_env
from deployments.config import load_config
from deployments.protocol import RequestError
from deployments.typed_config import ConfigError

pytestmark = pytest.mark.timeout(30)


def rejected(keys: ApiKeys, header, admin=False) -> RequestError:
    with pytest.raises(RequestError) as err:
        keys.authorize(header, admin)
    assert err.value.status == 401 and err.value.headers == {"WWW-Authenticate": "Bearer"}
    assert set(err.value.body()["error"]) == {"message", "type", "param", "code"}
    return err.value


def test_no_keys_means_no_check():
    keys = ApiKeys()
    assert not keys.enabled
    for header in (None, "", "Bearer anything", "garbage"):
        keys.authorize(header)
        keys.authorize(header, admin=True)


def test_bearer_key_required():
    keys = ApiKeys(["sk-right"])
    keys.authorize("Bearer sk-right")
    keys.authorize("bearer   sk-right  ")
    assert rejected(keys, None).code == "missing_api_key"
    assert rejected(keys, "sk-right").code == "missing_api_key"  # no scheme
    assert rejected(keys, "Basic sk-right").code == "missing_api_key"
    for wrong in ("Bearer sk-wrong", "Bearer sk-righ", "Bearer sk-right2", "Bearer SK-RIGHT", "Bearer \udcff"):
        err = rejected(keys, wrong)
        assert err.code == "invalid_api_key" and "sk-" not in err.message


def test_admin_keys_guard_the_status_route_and_open_the_others():
    keys = ApiKeys(["user-key"], ["admin-key"])
    keys.authorize("Bearer user-key")
    keys.authorize("Bearer admin-key")
    keys.authorize("Bearer admin-key", admin=True)
    assert "admin" in rejected(keys, "Bearer user-key", admin=True).message
    user_only = ApiKeys(["user-key"])
    user_only.authorize("Bearer user-key", admin=True)  # no admin key configured: any key reads status


def test_keys_from_config_and_environment():
    config = load_config(None, {"router.api_keys": ["from-config"]}).router
    keys = ApiKeys.from_config(config, {"SSJF_API_KEYS": " env-1, ,env-2 ", "SSJF_ADMIN_API_KEYS": "adm"})
    for key in ("from-config", "env-1", "env-2", "adm"):
        keys.authorize(f"Bearer {key}")
    rejected(keys, "Bearer env-1", admin=True)
    keys.authorize("Bearer adm", admin=True)
    assert keys_from_env("SSJF_API_KEYS", {}) == []
    assert not ApiKeys.from_config(load_config(None, {}).router, {}).enabled


def test_keys_stay_out_of_reprs():
    config = load_config(None, {"router.api_keys": ["sk-secret-1"], "router.admin_api_keys": ["sk-secret-2"]})
    assert "sk-secret" not in repr(config) and "sk-secret" not in repr(config.router)
    assert "sk-secret" not in repr(ApiKeys.from_config(config.router, {}))


@pytest.mark.parametrize("bad", [["has space"], ["a,b"], [""], [5], "not-a-list"])
def test_bad_keys_in_config_are_config_errors(bad):
    with pytest.raises(ConfigError, match="api_keys"):
        load_config(None, {"router.api_keys": bad})
