"""The commands of ``qsx-batch``, one module each, named as the command.

Every module has ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> exit status``;
:mod:`qsx_batch.cli` registers them in :data:`COMMANDS` order. Commands call the library, never each other;
options used by several commands live in :mod:`.options`. A command imports the library inside ``run``, so that
``qsx-batch --help`` and a mistyped option answer at once instead of after loading torch.
"""

from . import (
    blocks,
    calibrate,
    energy,
    evaluate,
    explore,
    export,
    inspect,
    launch,
    plot,
    retrain,
    sensitivity,
    train,
    validate,
)

COMMANDS = (explore, validate, calibrate, train, sensitivity, inspect, plot, evaluate, retrain, export, blocks, energy,
            launch)
