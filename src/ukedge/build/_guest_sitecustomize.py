"""ukedge's python runtime hook, copied into every python image as ``sitecustomize`` (the site
module imports it at start-up; an app started with ``python3 -S`` skips it, and with it this).

A prewarm snapshot freezes the app with everything it seeded from the kernel before it; each
clone resumed from it gets fresh kernel entropy, its own MAC and hostname from the guest init,
which then sends ``SIGWINCH`` (``ukedge.guest.RESUME_SIGNAL``) to the app. The handler here
re-draws what Python seeded from the kernel by itself, so two clones stop sharing it:

* ``random``'s module-level generator (``random.random()``, ``choice``, ``shuffle`` …), reseeded
  from ``os.urandom``; an app that seeded it with a fixed value on purpose loses that sequence;
* ``tempfile``'s name generator, and ``uuid``'s cached node (``uuid1()`` embeds the MAC);
* OpenSSL's generator, when the app loaded ``ssl`` (ukedge's runtime leaves it out).

Not reseedable in a running interpreter: the string hash seed (``PYTHONHASHSEED``; every dict
and set is laid out by it), ``random.Random()`` instances the app made itself, and generators
inside native extensions. Apps that depend on those use ``snapshot = "off"`` or ``"pre-app"``
(the snapshot is taken before the app starts), or draw from ``os.urandom``/``secrets``, which
the kernel reseeds. The handler runs in the main thread between bytecodes, within milliseconds
of the resume; an app that installs its own ``SIGWINCH`` handler replaces this one.

Kept tiny and free of imports at start-up (``_signal`` is built in; ``signal`` would import
``enum``): it runs at every start under TCG.
"""

import _signal  # type: ignore[import-not-found]  # built in; no stub
import sys


def _reseed(signum: int, frame: object) -> None:
    import os

    modules = sys.modules
    random = modules.get("random")
    if random is not None:
        random.seed()
    tempfile = modules.get("tempfile")
    if tempfile is not None:
        setattr(tempfile, "_name_sequence", None)  # noqa: B010 (private, untyped)
    uuid = modules.get("uuid")
    if uuid is not None:
        setattr(uuid, "_node", None)  # noqa: B010
        setattr(uuid, "_last_timestamp", None)  # noqa: B010
    ssl = modules.get("ssl")
    if ssl is not None:
        ssl.RAND_add(os.urandom(32), 32.0)


_signal.signal(_signal.SIGWINCH, _reseed)
