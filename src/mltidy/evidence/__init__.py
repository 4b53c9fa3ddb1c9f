"""Evidence for the judge beyond the record itself: the facts of this machine (``local``: host,
boot id, pid namespaces, processes) and the schedulers that ran the jobs."""
