"""The files an auditor hands the command line: checkpoints, Ed25519 keys, the chain key.

Each reader raises the command line's `UsageError` (exit 2) naming the option and the file and
saying what is wrong with it; a malformed checkpoint comes out as pydantic's validation error,
which the command line reports the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from workflow.engine.chain import MIN_KEY_BYTES
from workflow.engine.checkpoint import Checkpoint, load

PublicKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        metavar="FILE",
        help="With --since: the auditor's Ed25519 public key (PEM) the signature must match.",
    ),
]
"""The command line's ``--public-key`` option, for every command that reads a checkpoint."""

SinceOption = Annotated[
    Path | None,
    typer.Option(
        "--since",
        metavar="CHECKPOINT",
        help="Prove the history extends this checkpoint file (nothing it covers changed, "
        "removed or added), and replay only what changed after it.",
    ),
]
"""The command line's ``--since`` option, for every command that verifies against a
checkpoint."""


def _usage(message: str) -> Exception:
    from workflow.cli import UsageError

    return UsageError(message)


def _read(option: str, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _usage(f"{option}: can't read {what} {path}: {exc.strerror}") from None


def read_checkpoint(path: Path, option: str = "--since") -> Checkpoint:
    """The checkpoint in ``path`` (what ``idcard-workflow checkpoint`` wrote)."""
    return load(_read(option, path, "checkpoint file"))


def _cryptography(option: str) -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise _usage(
            f"{option} needs the cryptography package: pip install 'idcard-workflow[audit]'"
        ) from None


def read_public_key(path: Path, option: str = "--public-key") -> Any:
    """The Ed25519 public key in the PEM file ``path``."""
    _cryptography(option)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = _read(option, path, "public key")
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise _usage(f"{option}: {path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise _usage(f"{option}: {path} is not an Ed25519 public key")
    return key


def read_since(since: Path | None, public_key: Path | None) -> tuple[Checkpoint | None, Any]:
    """The checkpoint ``--since`` names and the key ``--public-key`` names (each None when
    not given); a public key without a checkpoint is a usage error."""
    if public_key is not None and since is None:
        raise _usage("--public-key: checks a checkpoint's signature; give --since too")
    checkpoint = None if since is None else read_checkpoint(since)
    return checkpoint, None if public_key is None else read_public_key(public_key)


def read_private_key(path: Path, option: str = "--key") -> Any:
    """The Ed25519 private key in the PEM file ``path`` (unencrypted PKCS 8, as
    ``openssl genpkey -algorithm ed25519`` writes it)."""
    _cryptography(option)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read(option, path, "private key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise _usage(f"{option}: {path} is encrypted; give an unencrypted key") from None
    except ValueError:
        raise _usage(f"{option}: {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _usage(f"{option}: {path} is not an Ed25519 private key")
    return key


def read_chain_key(path: Path, option: str = "--chain-key-file") -> bytes:
    """The chain key: the file's bytes, exactly (the bytes the writers were given)."""
    data = _read(option, path, "chain key file")
    if len(data) < MIN_KEY_BYTES:
        raise _usage(
            f"{option}: {path} holds {len(data)} bytes; a chain key is at least "
            f"{MIN_KEY_BYTES} bytes (e.g. head -c 32 /dev/urandom > {path.name})"
        )
    return data
