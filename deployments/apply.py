"""Apply topics, the bucket's retention rule, work pool, blocks, ``prefect.yaml``
deployments and automations; idempotent."""

import logging
import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.workers.process import ProcessWorker

from blocks.gcs import save_clip_blocks
from clipping.settings import Settings
from deployments.automations import ensure_recovery_automations
from deployments.pubsub import ensure_topology
from deployments.retention import apply_retention

PROJECT_DIR = Path(__file__).resolve().parent.parent
logger = logging.getLogger(__name__)


def deployment_variables(settings: Settings) -> dict[str, str]:
    """The variables ``prefect.yaml`` takes the work pool's and deployment's names from."""
    return {
        "CLIPPING_WORK_POOL": settings.work_pool,
        "CLIPPING_DEPLOYMENT_NAME": settings.deployment_name,
    }


def ensure_work_pool(name: str) -> None:
    pool = WorkPoolCreate(
        name=name,
        type=ProcessWorker.type,
        base_job_template=ProcessWorker.get_default_base_job_template(),
        description="NAS hosts that can read the recordings; one process worker per host.",
    )
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(pool)
            logger.info("created work pool %s", name)
        except ObjectAlreadyExists:
            logger.info("work pool %s exists", name)


def ensure_site_queues(settings: Settings) -> None:
    """One work queue of the pool per NAS site (``clipping.sites``)."""
    with get_client(sync_client=True) as client:
        for site in settings.sites:
            try:
                client.create_work_queue(name=site.work_queue, work_pool_name=settings.work_pool)
                logger.info("created work queue %s for site %s", site.work_queue, site.name)
            except ObjectAlreadyExists:
                logger.info("work queue %s exists", site.work_queue)


def deploy_all(settings: Settings, project_dir: Path = PROJECT_DIR) -> None:
    """Run ``prefect deploy --all`` on prefect.yaml: Prefect's own reader of that file.

    Its names come from the settings (``prefect.yaml`` templates them from these variables).
    """
    env = {
        **os.environ,
        **deployment_variables(settings),
        "CLIPPING_PROJECT_DIR": str(project_dir),
        "CLIPPING_PYTHON": sys.executable,
    }
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    if deploy.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{deploy.stdout}{deploy.stderr}")
    logger.info("deployed %s", project_dir / "prefect.yaml")


def apply(settings: Settings) -> None:
    ensure_topology(settings)
    apply_retention(settings)
    ensure_work_pool(settings.work_pool)
    ensure_site_queues(settings)
    bucket = save_clip_blocks(settings)
    logger.info("saved blocks %s (gs://%s)", settings.gcs_block, bucket.bucket)
    deploy_all(settings)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(settings.deployment)
    ensure_recovery_automations(deployment.id)
