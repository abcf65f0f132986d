"""``gpu-stress selftest``: the verdict measured by fault injection (docs/selftest.md).

- :mod:`stress.selftest.display` - the X server selftest starts and owns (faults go only into it);
- :mod:`stress.selftest.faults` - the fault classes and the reason each must produce (pure);
- :mod:`stress.selftest.inject` - one injector per class;
- :mod:`stress.selftest.xwin` - the overlay (black / frozen screen) and the browser-like load window;
- :mod:`stress.selftest.load` - the clean control's background load;
- :mod:`stress.selftest.trial` - one real run with its injection;
- :mod:`stress.selftest.results` - confusion matrix, detection times, targets, JSON / Markdown (pure);
- :mod:`stress.selftest.fake_nvml` - the NVML stand-in (also the tests' ``fake_nvml``).
"""
