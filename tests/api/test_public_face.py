"""What other parts may import from the API and the store is deliberate."""

from __future__ import annotations

import gateway.api
import gateway.store


def test_public_face() -> None:
    assert sorted(gateway.api.__all__) == ["ApiSettings", "Principal", "SCOPES", "TokenError", "TokenStore",
                                           "create_app", "requires"]
    assert sorted(gateway.store.__all__) == [
        "AlertDB", "AlertFilter", "AlertNotFound", "AlertStateConflict", "ChangeNotifier", "LogRecord",
        "SEVERITIES", "SilenceNotFound", "StoreConsumer", "StoreTopics", "Transition", "alert_id_for"]
    for module in (gateway.api, gateway.store):
        assert all(hasattr(module, name) for name in module.__all__)
