"""The comparison harness of issue 14: the same app as unikernel, container, full VM and plain
process, measured side by side on this machine (``ukedge bench compare``, ``make
bench-compare``).

Layout: :mod:`compare._measure` measures any form the same way; the forms are in
:mod:`compare._forms` (process, unikernel, full VM), :mod:`compare._container` (runc, crun,
podman) with the OCI image written by :mod:`compare._oci`, and the full VM's image built by
:mod:`compare._fullvm`; :mod:`compare._run` drives one run; :mod:`compare.report` renders the
JSON it returns as Markdown and PNG plots.
"""

from compare._run import Settings, run_compare
from compare.report import markdown, targets, write_report

__all__ = ["Settings", "markdown", "run_compare", "targets", "write_report"]
