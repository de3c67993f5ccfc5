# Every registered study's analysis and figures (iclscope.registry), from one definition each:
# `analyse_{study}` writes its tables, `plot_{study}` its figures and captions.json, per model
# (and per dataset for a per-dataset study). A study outside this package adds its rules by
# registering; no rule file names a study.
#
# One rule per study rather than one rule over a `{study}` wildcard: each study writes its own
# set of tables and figures, and Snakemake declares a rule's outputs as patterns, not as a
# function of the wildcards. The loop below is the one definition; the rules keep the names
# analyse_<study> and plot_<study>. (A rule's shell command is formatted when its job runs, after
# the loop has ended: it reads the study from the rule's params, never from `_study`.)


for _study in REGISTRY.values():
    _tables = study_dir(_study.name, "{model}", "{dataset}")
    _figures = study_dir(_study.name, "{model}", "{dataset}", figures=True)
    _log_tail = "_{dataset}" if _study.per_dataset else ""

    rule:
        name:
            f"analyse_{_study.name}"
        input:
            unpack(partial(analysis_inputs, _study.name)),
        output:
            table_outputs(_study.name, _tables),
        log:
            f"{LOGS}/{{model}}/analyse_{_study.name}{_log_tail}.log",
        conda:
            "../envs/analysis.yaml"
        params:
            study=_study.name,
            spec=partial(study_spec, _study.name),
            inputs=lambda wildcards, input: named(dict(input.items())),
            outs=lambda wildcards, output: named(output),
        shell:
            "python -m iclscope analyse {params.study} --inputs {params.inputs} --params {params.spec:q}"
            " --out {params.outs} > {log:q} 2>&1"

    rule:
        name:
            f"plot_{_study.name}"
        input:
            unpack(partial(plot_inputs, _study.name)),
        output:
            figure_outputs(_study.name, _figures),
            captions=f"{_figures}/{CAPTIONS_FILE}",
        log:
            f"{LOGS}/{{model}}/plot_{_study.name}{_log_tail}.log",
        conda:
            "../envs/analysis.yaml"
        params:
            study=_study.name,
            spec=partial(study_spec, _study.name),
            inputs=lambda wildcards, input: named(dict(input.items())),
            out_dir=partial(figure_folder, _study.name),
            captions=lambda wildcards, output: Captions(output.captions),
        shell:
            "python -m iclscope plot {params.study} --inputs {params.inputs} --params {params.spec:q}"
            " --out-dir {params.out_dir:q} > {log:q} 2>&1"
