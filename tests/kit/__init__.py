"""Helpers shared by the tests, in one place and imported one way: ``from kit.hub import ...``.

``pyproject.toml`` puts ``tests/`` on ``sys.path`` (``pythonpath``), so ``kit`` and the backend
suites in ``tests/conformance`` import by package name from any test directory; no test edits
``sys.path`` or loads a helper by file path. ``tests/conftest.py`` registers both packages for
pytest's assertion rewriting, so a failed ``assert`` in a helper explains itself like one in a test.

Modules: ``net`` (free ports), ``cpio`` (reading initramfs archives back), ``hub`` (the hub served
in-process on a free port, and pushing to it over its API), ``registry`` (CNCF distribution,
synthetic images, progress recorders, counting and failing transports), ``guest`` (booting the guest
contract without the vmm package), ``host`` (the ``ukedge`` command, waiting for HTTP), ``manager``
(an instance manager and its clean-up), ``probe`` (python probe images that answer from inside a
VM), ``agent`` (a host agent process, a hub with the examples), ``migration`` (two agents and
sensor-agg to move between them), ``link_controller`` (a restartable controller and its admin API),
``poll`` (waiting on a condition with a ceiling), ``invariants`` (what must hold on a node after a
crash), ``wheel`` (tiny wheels for the pip runtime), ``tls`` (self-signed certificates, an ASGI app
served over HTTPS by uvicorn), ``fake_controller`` (a stand-in for the controller's REST API,
scripted where the client must cope: stream ends and breaks, rollouts).
``crash_driver.py`` and ``fake_qmp.py`` are programs the tests run in a process of their own;
:func:`program` gives their path.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["program"]


def program(name: str) -> Path:
    """The path of a helper the tests run as a separate process (``crash_driver.py``)."""
    path = Path(__file__).with_name(name)
    if not path.is_file():
        raise FileNotFoundError(f"no helper program {name!r} in {path.parent}")
    return path
