"""Hardware and host state: NVML, kernel log, psutil. Only ``stress.hw.nvml`` imports pynvml."""
