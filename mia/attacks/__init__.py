"""One attack per module, all behind `mia.attacks.base.Attack`; `conf/attack/<name>.yaml` configures
each."""
