"""What an MQTT broker needs to know about devices: Mosquitto's password and ACL files.

Pure functions over text, no I/O: the registry (``gateway.registry``) writes their output.

Password lines follow Mosquitto 2's own format, ``user:$7$<iterations>$<salt>$<hash>``:
PBKDF2-HMAC-SHA512 over the UTF-8 password with a 12-byte random salt, both salt and the
64-byte hash in standard base64 with padding (what ``mosquitto_passwd`` writes; 101
iterations is its default).

The ACL gives each device exactly its own topics: it publishes ``vigil/<id>/events`` and
``vigil/<id>/status`` and reads ``vigil/<id>/ack`` and ``vigil/<id>/config``. Bridge users
read every device's events (and status) and publish every device's ack and config; they
also read the acks (several bridges learn from each other's, see ``gateway.core``).
Mosquitto denies whatever no line allows, so a revoked device (absent from both files) can
neither connect nor publish.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from edge import wire

__all__ = [
    "DEFAULT_ITERATIONS",
    "acl_text",
    "hash_password",
    "may",
    "new_password",
    "password_file_text",
    "verify_password",
]

DEFAULT_ITERATIONS = 101
SALT_BYTES = 12


def new_password() -> str:
    """A random password that survives any shell or config file: 32 url-safe characters."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The ``$7$...`` string Mosquitto 2 stores for ``password``."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError(f"not a Mosquitto $7$ password hash: {stored[:12]!r}...")
    iterations, salt, digest = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations), digest)


def _check_user(user: str) -> str:
    if ":" in user or "\n" in user or not user.strip() or user != user.strip():
        raise ValueError(f"user name {user!r} cannot be written to a Mosquitto password file")
    return user


def password_file_text(entries: Iterable[tuple[str, str]]) -> str:
    """``entries`` are (user, hash from hash_password); one line each, sorted by user."""
    return "".join(f"{_check_user(user)}:{hashed}\n" for user, hashed in sorted(entries))


def acl_text(devices: Iterable[str], bridge_users: Iterable[str]) -> str:
    """A Mosquitto ACL file: each device its own four topics, each bridge user all of them."""
    out = ["# written by vigil devices: edits here are overwritten\n"]
    for user in sorted(bridge_users):
        out.append(f"\nuser {_check_user(user)}\n"
                   f"topic read {wire.TOPIC_ROOT}/+/events\n"
                   f"topic read {wire.TOPIC_ROOT}/+/status\n"
                   f"topic readwrite {wire.TOPIC_ROOT}/+/ack\n"
                   f"topic write {wire.TOPIC_ROOT}/+/config\n")
    for device in sorted(devices):
        wire.check_device_id(device)
        out.append(f"\nuser {device}\n"
                   f"topic write {wire.events_topic(device)}\n"
                   f"topic write {wire.status_topic(device)}\n"
                   f"topic read {wire.ack_topic(device)}\n"
                   f"topic read {wire.config_topic(device)}\n")
    return "".join(out)


def _filter_within(requested: str, allowed: str) -> bool:
    """Whether topic (or filter) ``requested`` lies within filter ``allowed`` (``+`` only)."""
    req, alw = requested.split("/"), allowed.split("/")
    if len(req) != len(alw):
        return False
    return all(a == "+" or (r == a and r not in ("+", "#")) for r, a in zip(req, alw, strict=True))


def may(role: str, user: str, topic: str, action: str) -> bool:
    """The ACL as a function (what ``acl_text`` tells Mosquitto), for brokers that ask per
    request: ``role`` is ``device`` or ``bridge``, ``action`` is ``publish``, ``subscribe``
    or ``receive``."""
    root = wire.TOPIC_ROOT
    if role == "bridge":
        if action == "publish":
            allowed = [f"{root}/+/ack", f"{root}/+/config"]
        else:
            allowed = [f"{root}/+/events", f"{root}/+/status", f"{root}/+/ack"]
    elif role == "device":
        try:
            allowed = ([wire.events_topic(user), wire.status_topic(user)] if action == "publish"
                       else [wire.ack_topic(user), wire.config_topic(user)])
        except wire.WireError:
            return False
    else:
        return False
    return any(_filter_within(topic, a) for a in allowed)
