# Convert each configured model once into a folder that loads in about a second.


rule prepare_model:
    output:
        card=f"{RESOURCES}/models/{{model}}/card.json",
    log:
        f"{LOGS}/{{model}}/prepare_model.log",
    benchmark:
        f"{BENCH}/{{model}}/prepare_model.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=model_spec,
        out_dir=lambda wildcards: model_dir(wildcards.model),
    shell:
        "python -m iclscope prepare-model --params {params.spec:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
