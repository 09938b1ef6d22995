"""The human hallucination study: a reviewer rates test predictions blind, a stage turns the ratings into rates.

Modules: ratings (the append-only ratings file: format, atomic appends, checked reading), study (which
predictions are rated: the seeded sample of test windows and its blinded order), frames (the windows'
frames from the test shards), app (the ipywidgets rating form), stage (rates, intervals, paired tests,
report). Nothing heavy is imported here: the stage never loads the shards or ipywidgets.
"""
