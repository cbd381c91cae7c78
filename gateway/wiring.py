"""The container: clients and services, built once per execution environment (an entry module
builds one at import; Lambda reuses it across invocations) and passed to whatever needs it.
Everything is lazy: a function builds only what its routes use, so the tenant API never
loads the billing code and nothing heavy loads before the first request."""

from __future__ import annotations

import functools
import hashlib
import hmac
from functools import cached_property
from typing import TYPE_CHECKING, Any

from gateway.config import Settings

if TYPE_CHECKING:
    import redis

    from gateway.adapters.dynamo import Accounts, AuditLog, Credits, Table, UsageLedger
    from gateway.adapters.dynamo.batches import BatchRecords
    from gateway.adapters.dynamo.events import EventLog
    from gateway.adapters.dynamo.webhooks import DeliveryLog, Webhooks
    from gateway.adapters.flush_workers import LambdaFlushWorkers
    from gateway.adapters.inference import InferenceClient
    from gateway.adapters.object_store import ObjectStore
    from gateway.adapters.redis_store import RedisLimiter
    from gateway.adapters.webhook_sender import WebhookSender
    from gateway.services.auth import Authenticator
    from gateway.services.batch_worker import BatchWorker
    from gateway.services.batches import BatchService
    from gateway.services.billing import BillingService
    from gateway.services.calls import IdempotentCalls
    from gateway.services.embeddings import EmbeddingsService
    from gateway.services.gate import RequestGate
    from gateway.services.limits import LimitsResolver
    from gateway.services.metering import Flusher
    from gateway.services.reconcile import Reconciler
    from gateway.services.reports import ReportsService
    from gateway.services.seeding import Seeder
    from gateway.services.webhook_delivery import Deliverer
    from gateway.services.webhook_worker import DeliveryPool, Dispatcher, KeyExpirySweeper, WebhookWorker
    from gateway.services.webhooks import WebhookService


def _startup_config() -> Any:
    """For the calls a cold start makes once (the pepper, the Redis password): botocore's
    defaults are 60 s to connect and 60 s to read with legacy retries, which a stalled call
    would spend in the first request's 25 s; these fail inside it, as a 503 that is retried."""
    from botocore.config import Config

    return Config(connect_timeout=2, read_timeout=3, retries={"total_max_attempts": 2, "mode": "standard"})


class Container:
    """``Container(settings)`` builds every client from ``settings`` (the environment by
    default); a test or a tool may hand in its own ``dynamodb``, ``redis`` or ``inference``
    client instead."""

    def __init__(self, settings: Settings | None = None, *, dynamodb: Any = None,
                 redis: redis.Redis | redis.RedisCluster | None = None,
                 inference: InferenceClient | None = None) -> None:
        self.settings = settings or Settings.from_env()
        given = {"dynamodb": dynamodb, "redis": redis, "inference": inference}
        # cached_property reads the instance dict first: a given client is simply used.
        self.__dict__.update({name: client for name, client in given.items() if client is not None})

    # -- clients -------------------------------------------------------------------------
    @cached_property
    def boto_session(self) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.settings.aws_region)

    @cached_property
    def dynamodb(self) -> Any:
        from botocore.config import Config

        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5)
        return self.boto_session.client("dynamodb", endpoint_url=self.settings.dynamodb_endpoint, config=config)

    @cached_property
    def redis(self) -> redis.Redis | redis.RedisCluster:
        from gateway.adapters.redis_client import connect

        password = self.settings.redis_password
        if self.settings.redis_password_secret_arn:
            secrets = self.boto_session.client("secretsmanager", config=_startup_config())
            password = secrets.get_secret_value(SecretId=self.settings.redis_password_secret_arn)["SecretString"]
        return connect(self.settings.redis_url, cluster=self.settings.redis_cluster,
                       username=self.settings.redis_username, password=password,
                       timeout_s=self.settings.redis_timeout_s,
                       tls_check_hostname=self.settings.redis_tls_check_hostname)

    @cached_property
    def pepper(self) -> bytes:
        if self.settings.key_pepper:
            return self.settings.key_pepper.encode()
        if self.settings.key_pepper_param:
            ssm = self.boto_session.client("ssm", config=_startup_config())
            value = ssm.get_parameter(Name=self.settings.key_pepper_param, WithDecryption=True)
            return str(value["Parameter"]["Value"]).encode()
        raise RuntimeError("MAAS_KEY_PEPPER or MAAS_KEY_PEPPER_PARAM must be set")

    @cached_property
    def inference(self) -> InferenceClient:
        """The forwarder behind a circuit breaker: while the container is down or not ready,
        a request is refused at once (503 + Retry-After) instead of waiting for it."""
        from gateway.adapters.circuit import CircuitBreaker

        return CircuitBreaker(self._inference_client())

    def _inference_client(self) -> InferenceClient:
        from gateway.adapters import inference

        if self.settings.sagemaker_endpoint:
            from botocore.config import Config

            @functools.cache
            def client_for(read_timeout_s: int) -> Any:
                # One attempt ("max_attempts": 1 meant one retry: 2 x 20 s, past API Gateway's
                # 29 s); the read timeout is the call's own remaining time (at most 20 s).
                config = Config(read_timeout=read_timeout_s, connect_timeout=2,
                                retries={"total_max_attempts": 1, "mode": "standard"})
                return self.boto_session.client("sagemaker-runtime", config=config)

            return inference.SageMakerInferenceClient(self.settings.sagemaker_endpoint, client_for=client_for,
                                                      max_timeout_s=self.settings.inference_timeout_s)
        if not self.settings.inference_url:
            raise RuntimeError("MAAS_SAGEMAKER_ENDPOINT or MAAS_INFERENCE_URL must be set")
        return inference.HttpInferenceClient(self.settings.inference_url,
                                             timeout_s=self.settings.inference_timeout_s)

    # -- repositories and the limiter ------------------------------------------------------
    @cached_property
    def table(self) -> Table:
        from gateway.adapters.dynamo import Table

        return Table(self.dynamodb, self.settings.table_name)

    @cached_property
    def accounts(self) -> Accounts:
        from gateway.adapters.dynamo import Accounts

        return Accounts(self.table)

    @cached_property
    def usage(self) -> UsageLedger:
        from gateway.adapters.dynamo import UsageLedger

        return UsageLedger(self.table)

    @cached_property
    def credits(self) -> Credits:
        from gateway.adapters.dynamo import Credits

        return Credits(self.table)

    @cached_property
    def audit(self) -> AuditLog:
        from gateway.adapters.dynamo import AuditLog

        return AuditLog(self.table)

    @cached_property
    def limiter(self) -> RedisLimiter:
        from gateway.adapters.redis_store import RedisLimiter

        return RedisLimiter(self.redis, lease_ms=self.settings.lease_ms)

    # -- services --------------------------------------------------------------------------
    @cached_property
    def limits(self) -> LimitsResolver:
        from gateway.services.limits import LimitsResolver

        return LimitsResolver(self.accounts)

    @cached_property
    def seeder(self) -> Seeder:
        from gateway.services.seeding import Seeder

        return Seeder(accounts=self.accounts, usage=self.usage, credits=self.credits, limiter=self.limiter)

    @cached_property
    def authenticator(self) -> Authenticator:
        from gateway.services.auth import Authenticator

        return Authenticator(self.accounts, self.pepper, key_ttl_s=self.settings.key_cache_ttl_s,
                             tenant_ttl_s=self.settings.tenant_cache_ttl_s)

    @cached_property
    def embeddings(self) -> EmbeddingsService:
        from gateway.adapters.local_limits import LocalLimiter
        from gateway.adapters.tokenizer import ModelTokenizer
        from gateway.domain.registry import CATALOGUE
        from gateway.services.embeddings import EmbeddingsService

        fallback = LocalLimiter() if self.settings.quota_on_redis_failure == "open" else None
        return EmbeddingsService(tokenizers={spec.id: ModelTokenizer(spec) for spec in CATALOGUE}, limiter=self.limiter,
                                 inference=self.inference, usage=self.usage, limits=self.limits,
                                 gate=self.gate, fallback=fallback, timeout_s=self.settings.inference_timeout_s,
                                 max_request_tokens=self.settings.max_request_tokens)

    @cached_property
    def gate(self) -> RequestGate:
        from gateway.services.gate import RequestGate

        return RequestGate(limiter=self.limiter, limits=self.limits, seeder=self.seeder)

    @cached_property
    def billing(self) -> BillingService:
        from gateway.adapters.dynamo import Outbox
        from gateway.services.billing import BillingService, BillingStores, Projection

        stores = BillingStores(accounts=self.accounts, audit=self.audit, credits=self.credits,
                               outbox=Outbox(self.table), events=self.event_log)
        return BillingService(stores=stores, projection=Projection(limiter=self.limiter, seeder=self.seeder),
                              calls=self.idempotent_calls, limits=self.limits, pepper=self.pepper)

    @cached_property
    def idempotent_calls(self) -> IdempotentCalls:
        from gateway.adapters.dynamo import Idempotency
        from gateway.services.calls import IdempotentCalls

        return IdempotentCalls(Idempotency(self.table, self.pepper))

    @cached_property
    def reports(self) -> ReportsService:
        from gateway.adapters.dynamo import Reconciliations
        from gateway.services.reports import ReportsService

        return ReportsService(accounts=self.accounts, usage=self.usage, limits=self.limits,
                              reconciliations=Reconciliations(self.table))

    @cached_property
    def reconciler(self) -> Reconciler:
        from gateway.adapters.dynamo import Reconciliations
        from gateway.services.reconcile import Reconciler

        return Reconciler(accounts=self.accounts, usage=self.usage, credits=self.credits,
                          log=Reconciliations(self.table))

    @cached_property
    def flusher(self) -> Flusher:
        from gateway.services.metering import Flusher

        s = self.settings
        return Flusher(redis_client=self.redis, usage=self.usage, accounts=self.accounts,
                       batch_size=s.flusher_batch_size, claim_idle_ms=s.flusher_claim_idle_ms,
                       max_batches_per_stream=s.flusher_max_batches, concurrency=s.flusher_concurrency,
                       seed=self.seeder.seed, events=self.event_log, lanes=s.flusher_lanes)

    @cached_property
    def flush_workers(self) -> LambdaFlushWorkers:
        from gateway.adapters.flush_workers import LambdaFlushWorkers

        if not self.settings.flush_worker_function:
            raise RuntimeError("MAAS_FLUSH_WORKER_FUNCTION must be set")
        return LambdaFlushWorkers(self.boto_session.client("lambda"), self.settings.flush_worker_function)

    # -- the Batch API ---------------------------------------------------------------------
    @cached_property
    def object_store(self) -> ObjectStore:
        from gateway.adapters import object_store

        if self.settings.files_bucket:
            from botocore.config import Config

            # SigV4: a presigned URL of an object under a KMS key is refused with any other.
            client = self.boto_session.client("s3", config=Config(signature_version="s3v4"))
            return object_store.S3Store(client, self.settings.files_bucket)
        if not self.settings.files_dir:
            raise RuntimeError("MAAS_FILES_BUCKET or MAAS_FILES_DIR must be set for the Batch API")
        secret = (hmac.new(self.pepper, b"maas local file URLs", hashlib.sha256).digest()
                  if self.settings.files_url else None)
        return object_store.FolderStore(self.settings.files_dir, url_base=self.settings.files_url, secret=secret)

    @cached_property
    def batch_records(self) -> BatchRecords:
        from gateway.adapters.dynamo.batches import BatchRecords

        return BatchRecords(self.table)

    @cached_property
    def batches(self) -> BatchService:
        from gateway.services.batches import BatchService

        return BatchService(records=self.batch_records, store=self.object_store, limiter=self.limiter,
                            gate=self.gate, limits=self.limits, embeddings=self.embeddings)

    @cached_property
    def batch_worker(self) -> BatchWorker:
        from gateway.domain.usage import ledger_shards
        from gateway.services.batch_worker import BatchWorker

        embeddings, accounts, limits = self.embeddings, self.accounts, self.limits

        def tokenize(request: Any) -> tuple[str, list[list[int]]]:
            from gateway.domain.registry import resolve

            spec = resolve(request.model)
            if spec is None:
                raise RuntimeError(f"the model {request.model} left the catalogue during the batch")
            return spec.id, embeddings.encode(spec, request)

        def shards_for(tenant_id: str) -> int:
            tenant = accounts.get_tenant(tenant_id)
            return ledger_shards(limits.for_tenant(tenant).requests_per_minute) if tenant else 1

        return BatchWorker(records=self.batch_records, store=self.object_store, limiter=self.limiter,
                           embed=self.inference.embed, tokenize=tokenize, shards_for=shards_for)

    # -- events and webhooks ---------------------------------------------------------------
    @cached_property
    def event_log(self) -> EventLog:
        from gateway.adapters.dynamo.events import EventLog

        return EventLog(self.table)

    @cached_property
    def webhooks(self) -> Webhooks:
        from gateway.adapters.dynamo.webhooks import Webhooks
        from gateway.adapters.secret_box import SecretBox

        return Webhooks(self.table, SecretBox.for_webhook_secrets(self.pepper))

    @cached_property
    def deliveries(self) -> DeliveryLog:
        from gateway.adapters.dynamo.webhooks import DeliveryLog

        return DeliveryLog(self.table)

    @cached_property
    def webhook_sender(self) -> WebhookSender:
        from gateway.adapters.webhook_sender import WebhookSender

        return WebhookSender(allow_local_http=self.settings.webhook_allow_local_http,
                             timeout_s=self.settings.webhook_timeout_s)

    @cached_property
    def webhook_service(self) -> WebhookService:
        from gateway.services.webhooks import WebhookService

        return WebhookService(webhooks=self.webhooks, deliveries=self.deliveries, events=self.event_log,
                              audit=self.audit, sender=self.webhook_sender, calls=self.idempotent_calls)

    @cached_property
    def delivery_pool(self) -> DeliveryPool:
        from gateway.services.webhook_worker import DeliveryPool

        return DeliveryPool()

    @cached_property
    def deliverer(self) -> Deliverer:
        from gateway.services.webhook_delivery import Deliverer

        # A claim outlives an attempt (connect + read timeouts) with room to log it.
        return Deliverer(webhooks=self.webhooks, deliveries=self.deliveries, events=self.event_log,
                         sender=self.webhook_sender, claim_s=2 * self.settings.webhook_timeout_s + 10)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        from gateway.services.webhook_worker import DirectPublisher, Dispatcher, Publisher

        publisher: Publisher
        if self.settings.event_bus_name:
            from gateway.adapters.event_bus import EventBridgePublisher

            publisher = EventBridgePublisher(self.boto_session.client("events"), self.settings.event_bus_name)
        else:
            publisher = DirectPublisher(self.deliverer, self.delivery_pool)
        return Dispatcher(self.event_log, self.deliverer, publisher)

    @cached_property
    def key_expiry_sweeper(self) -> KeyExpirySweeper:
        from gateway.services.webhook_worker import KeyExpirySweeper

        return KeyExpirySweeper(self.event_log, self.accounts)

    @cached_property
    def webhook_worker(self) -> WebhookWorker:
        from gateway.services.webhook_worker import WebhookWorker

        return WebhookWorker(dispatcher=self.dispatcher, deliverer=self.deliverer, sweeper=self.key_expiry_sweeper,
                             pool=self.delivery_pool)
