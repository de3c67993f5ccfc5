# Study B: representations before and after ICL (Yousefi et al., 2024).


rule analyse_representations:
    input:
        unpack(lambda wildcards: study_inputs(wildcards.model, "representations")),
    output:
        table_outputs("representations", f"{RESULTS}/{{model}}/representations"),
    log:
        f"{LOGS}/{{model}}/analyse_representations.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: canonical_json(
            {"seed": config["seed"], "representations": config["representations"]}
        ),
        inputs=lambda wildcards, input: named(dict(input.items())),
        outs=lambda wildcards, output: named(output),
    shell:
        "python -m iclscope analyse representations --inputs {params.inputs} --params {params.spec:q}"
        " --out {params.outs} > {log:q} 2>&1"
