"""Jobs: a task on the engine plus its evaluation, as the command line runs them.

``pretrain`` (contrastive training with its evaluation sets), ``glue`` (the GLUE fine-tuning
protocol), ``demo`` (build the openclipart shards, train, evaluate, plot), ``search`` (a folder
of images, searched), ``analyze`` (the representation analyses of a saved model).
"""
