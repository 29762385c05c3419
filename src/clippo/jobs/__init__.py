"""Jobs: a task on the engine plus its evaluation, as the command line runs them.

``pretrain`` (contrastive training with its evaluation sets), ``glue`` (the GLUE fine-tuning
protocol), ``demo`` (build the openclipart shards, train, evaluate, plot).
"""
