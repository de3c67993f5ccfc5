# Study C: label relationships (Kossen, Gal, Rainforth, 2024), one job per dataset.


rule analyse_labels:
    input:
        tasks=lambda wildcards: task_table(f"labels_{wildcards.dataset}"),
        readouts=lambda wildcards: extracted_table(
            wildcards.model, f"labels_{wildcards.dataset}", "readouts"
        ),
    output:
        table_outputs("labels", f"{RESULTS}/{{model}}/labels/{{dataset}}"),
    log:
        f"{LOGS}/{{model}}/analyse_labels_{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: labels_spec(wildcards.dataset),
        outs=lambda wildcards, output: named(output),
    shell:
        "python -m iclscope analyse labels --inputs tasks={input.tasks:q} readouts={input.readouts:q}"
        " --params {params.spec:q} --out {params.outs} > {log:q} 2>&1"
