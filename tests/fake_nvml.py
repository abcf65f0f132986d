"""The scripted stand-in of ``pynvml`` lives in the package (``stress.selftest.fake_nvml``: selftest needs it
on machines without a GPU); this name keeps ``import fake_nvml`` and ``STRESS_NVML_MODULE=fake_nvml`` working
in the tests. Both names are one module."""
import sys

from stress.selftest import fake_nvml as _module

sys.modules[__name__] = _module
