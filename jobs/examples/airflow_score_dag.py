"""Example Airflow DAG: incremental batch scoring every 15 minutes (not imported by lakedl or its tests).

Copy into your Airflow dags/ folder and adjust the paths. `lakedl score --source` only scores rows the
bundle's model version has not scored, MERGEs them into the predictions Delta table and records the run
in `score_runs`; a lease makes an overlapping run exit with code 1, so one active run is also enforced
here (max_active_runs=1) for object stores without atomic create-if-absent."""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG(
    dag_id="lakedl_score_reviews",
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
) as dag:
    BashOperator(
        task_id="score",
        bash_command=(
            "spark-submit --master yarn --py-files dist/lakedl-pyfiles.zip jobs/score.py "
            "--bundle bundles/current --source silver_reviews"
        ),
        cwd="/srv/lakedl",
    )
