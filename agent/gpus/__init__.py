"""GPUs: what this machine has and who gets which.

    inventory   the NVIDIA GPUs and MIG instances (NVML; SHIPYARD_FAKE_GPUS in tests) and their readings
    alloc       `--gpus`, queue GPU specs, the allocator, and CUDA_VISIBLE_DEVICES for a task
"""
