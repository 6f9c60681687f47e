"""Generators of the committed sample pilots that are not plain presets of :mod:`pilot_lib.synth`.

``invoice_reconciliation``
    The playbook's pilot that ships: one agent reconciling invoices across three
    legacy systems, its decision log recorded as OpenTelemetry traces (OTLP JSON
    Lines) by running a scripted agent under the real OpenTelemetry SDK.
    Regenerate with ``python -m pilot_lib.samples.invoice_reconciliation``.
"""

from __future__ import annotations

__all__: list[str] = []
