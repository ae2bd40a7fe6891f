"""``python -m training``: the training stage's command under torchrun.

``python -m torch.distributed.run --standalone --nproc_per_node=2 -m training
--config train.yaml`` runs DistributedDataParallel: every rank trains, rank 0
evaluates, logs, registers and prints the ``RESULT {json}`` line. The options
are ``feedrank train``'s (:mod:`training.command`). This entry point imports
no orchestration (``feedrank``), only the training stage and the foundation.
"""

from training.command import train_command

if __name__ == "__main__":
    train_command()(prog_name="python -m training")  # pylint: disable=no-value-for-parameter
