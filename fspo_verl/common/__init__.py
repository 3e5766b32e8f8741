"""The ground floor: small helpers every other subpackage may import, importing only verl, OmegaConf and the
standard library (never another fspo_verl subpackage).

- ``registry_guard``: registering into verl's registries without clobbering verl's own names
- ``config_lookup``: reading a composed config by dotted key
- ``critic``: whether a config uses a critic (one answer for every check)
- ``import_hooks``: running code when a module is first imported (how we patch verl lazily)
- ``gc_pauses``: freezing the start-up heap out of the garbage collector
- ``ray_cluster``: a Ray cluster that is already running (its resources, read without connecting)
"""
