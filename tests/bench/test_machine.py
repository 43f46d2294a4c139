"""Machine facts: CPU, INT8-relevant flags, cores, GPU list and versions, without importing torch."""

from __future__ import annotations

import subprocess
import sys

from sperm_edge.bench.machine import describe_machine, machine_facts
from sperm_edge.hardware import INTERESTING_FLAGS


def test_machine_facts_have_what_the_report_needs() -> None:
    facts = machine_facts(threads=2)
    cpu = facts["cpu"]
    assert cpu["model"] and cpu["usable_cpus"] >= 1 and cpu["logical_cpus"] >= 1
    if cpu["flags"]:  # Linux x86: every flag we report is a bool
        assert set(cpu["flags"]) == set(INTERESTING_FLAGS)
        assert all(isinstance(v, bool) for v in cpu["flags"].values())
    assert isinstance(facts["gpus"], list)
    assert facts["threads"] == 2
    assert "onnxruntime" in facts["versions"] and "python" in facts["versions"]
    line = describe_machine(facts)
    assert cpu["model"] in line and "2 threads" in line


def test_the_bench_package_imports_without_torch() -> None:
    code = "import sys, sperm_edge.bench, sperm_edge.bench.machine; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
