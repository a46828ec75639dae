"""Measurement probes: OONI-style DNS, TCP, TLS, HTTP and web-connectivity measurements.

Modules: ``context`` (ProbeContext), ``errors``, ``failures`` (OONI failure strings),
``base`` (Probe, load_probes), ``measurement`` (the OONI envelope), one module per probe type
(``dns``, ``tcp``, ``tls``, ``http``, ``web``), ``worker`` (``python -m probes.worker``), and
the helpers ``streams``, ``safety`` and ``trace``.

Importing this package imports nothing else, so the worker starts fast.
"""

#: The project's version: the package metadata is built from it (pyproject.toml), and every
#: measurement carries it as software_version.
__version__ = "0.1.0"
