"""``ukedge key generate``, ``ukedge sign`` and ``ukedge verify``: cosign key-pair signatures.

The key files and the signatures are cosign's, so ``cosign verify --key`` reads what ``ukedge
sign`` wrote and the other way round. The private key's password comes from
``UKEDGE_KEY_PASSWORD`` (or cosign's ``COSIGN_PASSWORD``), else from a prompt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ukedge.cli._console import out, print_json
from ukedge.errors import SignatureError, UsageError

__all__ = ["key_app", "register", "sign_command", "verify_command"]

PASSWORD_ENVS = ("UKEDGE_KEY_PASSWORD", "COSIGN_PASSWORD")

key_app = typer.Typer(
    help="Make signing keys (cosign's format: PREFIX.key, encrypted, and PREFIX.pub).",
    no_args_is_help=True,
)


def _password(*, confirm: bool) -> bytes:
    for name in PASSWORD_ENVS:
        if name in os.environ:
            return os.environ[name].encode()
    if not sys.stdin.isatty():
        raise UsageError(
            "no password for the private key: set UKEDGE_KEY_PASSWORD (an empty value is "
            "allowed) or run in a terminal"
        )
    text: str = typer.prompt(
        "Password for the private key", hide_input=True, confirmation_prompt=confirm
    )
    return text.encode()


_INSECURE = typer.Option(
    False, "--insecure", help="Plain HTTP (default only for localhost/127.0.0.1 registries)."
)


@key_app.command("generate")
def generate_command(
    prefix: Annotated[
        Path,
        typer.Option("--output-key-prefix", help="Write PREFIX.key and PREFIX.pub [cosign]."),
    ] = Path("cosign"),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
    as_json: bool = typer.Option(False, "--json", help="Print the paths and key id as JSON."),
) -> None:
    """Make an ECDSA P-256 key pair; the private key is sealed with a password."""
    from ukedge.image import PublicKey, write_key_pair

    key_path, pub_path = write_key_pair(prefix, _password(confirm=True), force=force)
    key_id = PublicKey.from_pem(pub_path.read_bytes()).key_id
    if as_json:
        print_json({"private_key": str(key_path), "public_key": str(pub_path), "key_id": key_id})
        return
    out.print(f"Private key written to {key_path}\nPublic key written to {pub_path} ({key_id})")


def sign_command(
    image: Annotated[str, typer.Argument(help="HOST[:PORT]/NAME[:TAG|@DIGEST] on a registry.")],
    key: Annotated[Path, typer.Option("--key", help="Private key file (cosign's format).")],
    insecure: bool = _INSECURE,
    as_json: bool = typer.Option(False, "--json", help="Print what was signed as JSON."),
) -> None:
    """Sign an image in its registry (an index: with each platform's manifest)."""
    from ukedge.image import PrivateKey
    from ukedge.registry import sign

    try:
        data = key.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the private key {key}: {exc.strerror}") from None
    private = PrivateKey.from_pem(data, _password(confirm=False), str(key))
    signed = sign(image, private, insecure=True if insecure else None)
    if as_json:
        print_json(
            [
                {
                    "digest": s.digest,
                    "media_type": s.media_type,
                    "signature_manifest": s.signature_manifest,
                    "tag": s.tag,
                    "added": s.added,
                }
                for s in signed
            ]
        )
        return
    for s in signed:
        what = "Signed" if s.added else "Already signed by this key:"
        out.print(f"{what} {s.digest} (signatures: {s.tag})")


def verify_command(
    image: Annotated[str, typer.Argument(help="HOST[:PORT]/NAME[:TAG|@DIGEST] on a registry.")],
    keys: Annotated[
        list[Path],
        typer.Option(
            "--key", help="Trusted public key (PEM); repeat for several (any one suffices)."
        ),
    ],
    insecure: bool = _INSECURE,
    as_json: bool = typer.Option(False, "--json", help="Print each manifest's verdict as JSON."),
) -> None:
    """Verify an image's signatures against trusted public keys; exit 1 unless all verify."""
    from ukedge.image import read_public_keys
    from ukedge.registry import verify

    verdicts = verify(image, read_public_keys(keys), insecure=True if insecure else None)
    if as_json:
        print_json(
            [
                {
                    "digest": v.digest,
                    "verified": v.ok,
                    "signers": list(v.signers),
                    "reason": v.reason,
                }
                for v in verdicts
            ]
        )
    else:
        for v in verdicts:
            if v.ok:
                out.print(f"Verified {v.digest} (signed by {', '.join(v.signers)})")
            else:
                out.print(f"NOT verified {v.digest}: {v.reason}")
    failed = [v for v in verdicts if not v.ok]
    if failed:
        if as_json:
            raise typer.Exit(1)
        raise SignatureError(
            f"{image}: {len(failed)} of {len(verdicts)} manifest(s) not verified "
            f"({failed[0].reason})",
            image=image,
            digest=failed[0].digest,
            reason=failed[0].reason,
        )


def register(app: typer.Typer) -> None:
    app.command("sign")(sign_command)
    app.command("verify")(verify_command)
    app.add_typer(key_app, name="key")
