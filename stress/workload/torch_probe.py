"""``python -m stress.workload.torch_probe MOD:DIST ...``: what the worker's environment can import.

The doctor runs this in a subprocess (the supervisor side never imports torch) and reads the line
``STRESS-DOCTOR {json}``: torch's version, its CUDA build, the devices, cuDNN, and each worker library
(``MOD`` imported, ``DIST``'s installed version).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import sys


def probe(pairs: list[str]) -> dict:
    out: dict = {"torch": None, "deps": {}}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda_build"] = torch.version.cuda
        out["cuda_available"] = bool(torch.cuda.is_available())
        n = torch.cuda.device_count() if out["cuda_available"] else 0
        out["devices"] = [torch.cuda.get_device_name(i) for i in range(n)]
        try:
            out["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001 - no cuDNN in this build
            out["cudnn"] = None
    except Exception as exc:  # noqa: BLE001 - reported to the doctor, which says how to fix it
        out["error"] = f"{type(exc).__name__}: {exc}"
    for pair in pairs:
        mod, _, dist = pair.partition(":")
        try:
            __import__(mod)
            try:
                version = md.version(dist or mod)
            except Exception:  # noqa: BLE001 - imported from a source tree, no metadata
                version = None
            out["deps"][mod] = {"ok": True, "version": version}
        except Exception as exc:  # noqa: BLE001
            out["deps"][mod] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


if __name__ == "__main__":
    print("STRESS-DOCTOR " + json.dumps(probe(sys.argv[1:])))
