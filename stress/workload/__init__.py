"""The workload engine that runs inside the worker process (torch + diffusers).

``engine.WorkloadSession`` is the interface the worker calls; ``models`` builds and loads models
(built-in random-weight ones included), ``prompts`` generates and encodes prompts as SD.Next does,
``schedulers`` maps sampler names to diffusers schedulers, ``pipelines`` runs and saves, ``alloc``
reads the allocator. Importing this package does not import torch (the supervisor never does).
"""
