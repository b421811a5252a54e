"""A deployment that requires signatures: its image is verified once, when the revision is made.

The controller verifies the pinned digest (and, for an index, each platform's manifest) against
the keys it was started with (``ukedge controller serve --trusted-key FILE``) before anything is
stored, so a refused rollout touches no node: no revision, no desired state, no heartbeat
answer changes. Nodes still check with their own policy before every start; this check is the
fleet-wide one, made where the registry is at hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ukedge.errors import ControllerError, RegistryError, UsageError
from ukedge.image import PublicKey

__all__ = ["check_signed"]

log = logging.getLogger(__name__)


def check_signed(reference: str, keys: Sequence[PublicKey]) -> None:
    """Raise ControllerError (422) unless every manifest of the pinned ``reference`` carries a
    valid signature by one of ``keys``; the message names the image, digest and reason."""
    from ukedge.registry import verify

    if not keys:
        raise ControllerError(
            "the deployment requires a signature, but this controller trusts no key: start it "
            "with --trusted-key FILE (a cosign public key)",
            status=422,
        )
    try:
        verdicts = verify(reference, list(keys))
    except (RegistryError, UsageError) as exc:
        raise ControllerError(
            f"cannot verify the signatures of {reference}: {exc}", status=502
        ) from exc
    for verdict in verdicts:
        if not verdict.ok:
            raise ControllerError(
                f"image {reference} refused: manifest {verdict.digest} {verdict.reason}; "
                f"sign it (`ukedge sign {reference} --key KEY`) with a key the controller "
                "trusts, or deploy without require_signature",
                status=422,
            )
    log.info("%s: signed by %s", reference, ", ".join(verdicts[0].signers))
