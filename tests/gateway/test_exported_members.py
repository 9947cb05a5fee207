"""The gateway's public face (what other parts may import) is deliberate."""

from __future__ import annotations

import gateway


def test_exported_members() -> None:
    assert sorted(gateway.__all__) == ["Bridge", "BridgeConfig", "BridgeFailed", "Device", "MosquittoFiles",
                                       "Registry", "RegistryError", "publish_config"]
    assert all(hasattr(gateway, name) for name in gateway.__all__)
