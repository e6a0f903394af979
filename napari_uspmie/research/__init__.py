"""Research commands: LaSSIM validation, the MRI data set and acquisition model, NIQE, evaluations, demo.

Product code never imports this package; the command line and the sample data reach it on demand.
"""
