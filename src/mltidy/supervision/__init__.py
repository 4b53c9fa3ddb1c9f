"""``mltidy run``: supervise a training command and clean up the moment it dies.

``process`` runs the child and passes signals on; ``sampling`` notes its descendants and
cgroups; ``oom`` tells whether a SIGKILL was the OOM killer; ``cleanup`` closes what the job
left RUNNING (through :mod:`mltidy.close`); ``report`` turns the end into one event.
"""
