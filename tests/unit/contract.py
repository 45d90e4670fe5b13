"""Names CONTRACT.md fixes (the vocabulary of LOG_FORMATS.md section 0): the tests that
check the shipped rules and the diagnosis against them share them."""

ERROR_MARKERS = {
    "python_traceback",
    "python_exception",
    "cuda_oom",
    "npu_oom",
    "host_oom",
    "sigkill",
    "segfault",
    "bus_error",
    "abort",
    "cuda_error",
    "nccl_error",
    "nccl_timeout",
    "hccl_error",
    "hccl_timeout",
    "ascend_error",
    "timeout",
    "nan_loss",
    "loss_scale_min_reached",
    "child_failed",
    "dataloader_worker_killed",
    "modelarts_error",
    "training_failed",
}
WARNING_MARKERS = {
    "loss_scale_overflow",
    "nan_grad",
    "skipped_steps",
    "nan_loss_suspected",
    "loss_zero",
    "nan_metric",
}
