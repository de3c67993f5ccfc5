# Study A: binary-sequence dynamics (Bigelow et al., 2024).


rule analyse_binary:
    input:
        unpack(lambda wildcards: study_inputs(wildcards.model, "binary")),
    output:
        table_outputs("binary", f"{RESULTS}/{{model}}/binary"),
    log:
        f"{LOGS}/{{model}}/analyse_binary.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: canonical_json(
            {"seed": config["seed"], "binary": config["binary"]}
        ),
        inputs=lambda wildcards, input: named(dict(input.items())),
        outs=lambda wildcards, output: named(output),
    shell:
        "python -m iclscope analyse binary --inputs {params.inputs} --params {params.spec:q}"
        " --out {params.outs} > {log:q} 2>&1"
