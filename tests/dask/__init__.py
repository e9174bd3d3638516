"""DaskVine and DaskVineDag."""
