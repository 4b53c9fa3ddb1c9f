"""Linking Optuna trials and MLflow runs both ways.

``pairing`` decides which run trained which trial (pure), ``link`` plans and applies the links
over a store session, ``urls`` builds the pages people click, ``live`` links a trial and its run
while a study runs (``track(link=True)``).
"""
