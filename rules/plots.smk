# Figures (and a captions.json) per model and study, from the analysis tables.


rule plot_binary:
    input:
        lambda wildcards: study_tables(wildcards.model, "binary"),
    output:
        figure_outputs("binary", f"{RESULTS}/{{model}}/figures/binary"),
        captions=f"{RESULTS}/{{model}}/figures/binary/captions.json",
    log:
        f"{LOGS}/{{model}}/plot_binary.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: canonical_json(
            {"seed": config["seed"], "binary": config["binary"]}
        ),
        inputs=lambda wildcards, input: named(input),
        out_dir=lambda wildcards: f"{RESULTS}/{wildcards.model}/figures/binary",
        captions=lambda wildcards, output: Captions(output.captions),
    shell:
        "python -m iclscope plot binary --inputs {params.inputs} --params {params.spec:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plot_representations:
    input:
        lambda wildcards: study_tables(wildcards.model, "representations"),
    output:
        figure_outputs(
            "representations", f"{RESULTS}/{{model}}/figures/representations"
        ),
        captions=f"{RESULTS}/{{model}}/figures/representations/captions.json",
    log:
        f"{LOGS}/{{model}}/plot_representations.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: canonical_json(
            {"seed": config["seed"], "representations": config["representations"]}
        ),
        inputs=lambda wildcards, input: named(input),
        out_dir=lambda wildcards: f"{RESULTS}/{wildcards.model}/figures/representations",
        captions=lambda wildcards, output: Captions(output.captions),
    shell:
        "python -m iclscope plot representations --inputs {params.inputs} --params {params.spec:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plot_labels:
    input:
        curves=f"{RESULTS}/{{model}}/labels/{{dataset}}/curves.parquet",
    output:
        figure_outputs("labels", f"{RESULTS}/{{model}}/figures/labels/{{dataset}}"),
        captions=f"{RESULTS}/{{model}}/figures/labels/{{dataset}}/captions.json",
    log:
        f"{LOGS}/{{model}}/plot_labels_{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: labels_spec(wildcards.dataset),
        out_dir=lambda wildcards: f"{RESULTS}/{wildcards.model}/figures/labels/{wildcards.dataset}",
        captions=lambda wildcards, output: Captions(output.captions),
    shell:
        "python -m iclscope plot labels --inputs curves={input.curves:q} --params {params.spec:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
