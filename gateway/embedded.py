"""The embedded MQTT broker (amqtt, MQTT 3.1.1, in-process): the one-box default.

Two amqtt plugins apply the registry, as Mosquitto's password and ACL files do:
``RegistryAuthPlugin`` checks a client's user name and password against the registry
(active devices and bridge users, the same PBKDF2 hashes), and ``RegistryTopicPlugin``
allows each publish, subscribe and delivery by ``gateway.credentials.may``. Both read
the registry at most every ``cache_s`` seconds per user, so a revoked device's publishes
are refused within that time (its open connection stays, carrying nothing).

amqtt has no shared subscriptions and no MQTT 5: run one bridge against it, with
``--mqtt-version 3.1.1``. It measured 2-5k messages/s here, fine for a demo box.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import amqtt.broker
from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.errors import MQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from gateway import credentials
from gateway.registry import Registry

__all__ = ["RegistryAuthPlugin", "RegistryTopicPlugin", "broker_config", "serve"]

log = logging.getLogger("vigil.gateway")


class _Lookup:
    """Registry look-ups, cached for ``cache_s`` per user (one registry per path)."""

    _shared: ClassVar[dict[str, _Lookup]] = {}

    def __init__(self, path: str, cache_s: float) -> None:
        self.registry = Registry(path)
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, tuple[str, str] | None]] = {}

    @classmethod
    def for_path(cls, path: str, cache_s: float) -> _Lookup:
        if path not in cls._shared:
            cls._shared[path] = cls(path, cache_s)
        return cls._shared[path]

    def user(self, name: str) -> tuple[str, str] | None:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is None or hit[0] <= now:
            hit = (now + self.cache_s, self.registry.mqtt_user(name))
            self._cache[name] = hit
        return hit[1]


@dataclass
class RegistryPluginConfig:
    """What both registry plugins read from amqtt's plugin configuration."""

    registry: str = "var/gateway/devices.db"
    cache_s: float = 1.0


class RegistryAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    Config = RegistryPluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._lookup = _Lookup.for_path(self.config.registry, self.config.cache_s)

    async def authenticate(self, *, session: Session) -> bool | None:
        user, password = session.username, session.password
        if not user or password is None:
            return False
        found = self._lookup.user(user)
        ok = found is not None and credentials.verify_password(password, found[1])
        if not ok:
            log.warning("mqtt login refused user=%s", user)
        return ok


class RegistryTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    Config = RegistryPluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._lookup = _Lookup.for_path(self.config.registry, self.config.cache_s)

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        if session is None or not session.username or topic is None or action is None:
            return False
        found = self._lookup.user(session.username)
        if found is None:
            return False
        return credentials.may(found[0], session.username, topic, str(action.value))


class _AuthFirstHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt (0.12) looks a CONNECT's client id up in its sessions -- and takes over (or,
    with clean_session, deletes) the live session of that id -- before it checks the
    password, so anyone could knock a device off by connecting with its id and any
    password. This handler refuses a bad login right after reading CONNECT, before the
    broker touches any session."""

    @classmethod
    async def init_from_connect(cls, reader: Any, writer: Any, plugins_manager: Any,
                                loop: Any = None) -> tuple[Any, Session]:
        handler, session = await super().init_from_connect(reader, writer, plugins_manager, loop)
        returns = await plugins_manager.map_plugin_auth(session=session)
        results = [r for r in (returns or {}).values() if r is not None]
        if not results or not all(results):
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            raise MQTTError(f"client {session.client_id!r} (user {session.username!r}) not authorized")
        return handler, session


def broker_config(host: str, port: int, registry: str, cache_s: float = 1.0) -> dict[str, Any]:
    plugin = {"registry": registry, "cache_s": cache_s}
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "gateway.embedded.RegistryAuthPlugin": plugin,
            "gateway.embedded.RegistryTopicPlugin": plugin,
        },
    }


async def _serve(host: str, port: int, registry: str) -> None:
    amqtt.broker.BrokerProtocolHandler = _AuthFirstHandler  # see the class
    broker = Broker(broker_config(host, port, registry))
    await broker.start()
    log.info("embedded mqtt broker listening on %s:%d registry=%s", host, port, registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def serve(host: str, port: int, registry: str) -> None:
    """Run the embedded broker until SIGTERM/SIGINT."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
    asyncio.run(_serve(host, port, registry))
