# The service: the image in ECR, ECS on Fargate in the private subnets of
# every zone, behind an HTTPS load balancer with WAF, scaled on CPU and on
# how far the stream's consumers are behind.

resource "aws_ecr_repository" "shopstream" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_lifecycle_policy" "shopstream" {
  repository = aws_ecr_repository.shopstream.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last 30 images"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 30 }
      action       = { type = "expire" }
    }]
  })
}

resource "aws_ecs_cluster" "main" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "service" {
  name              = "/${var.name}/service"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  # The collector: traces from the service's OTLP exporter to X-Ray, and the
  # Prometheus metrics of `metrics_listen` to CloudWatch as EMF (namespace
  # var.name), sampled as var.otel_sampling_ratio says.
  adot_config = <<-YAML
    receivers:
      otlp:
        protocols:
          http:
            endpoint: 127.0.0.1:4318
      prometheus:
        config:
          scrape_configs:
            - job_name: shopstream
              scrape_interval: 30s
              static_configs:
                - targets: ["127.0.0.1:9090"]
    processors:
      batch: {}
    exporters:
      awsxray:
        region: ${var.region}
      awsemf:
        region: ${var.region}
        namespace: ${var.name}
        log_group_name: /${var.name}/metrics
    service:
      pipelines:
        traces:
          receivers: [otlp]
          processors: [batch]
          exporters: [awsxray]
        metrics:
          receivers: [prometheus]
          processors: [batch]
          exporters: [awsemf]
  YAML

  environment = {
    SHOPSTREAM_BACKEND                = "aws"
    SHOPSTREAM_STREAM                 = "kinesis"
    SHOPSTREAM_KINESIS_STREAM         = aws_kinesis_stream.events.name
    SHOPSTREAM_TABLE_PREFIX           = var.table_prefix
    SHOPSTREAM_IMAGES_BUCKET          = aws_s3_bucket.images.bucket
    SHOPSTREAM_NOTIFIER               = "ses"
    SHOPSTREAM_SES_FROM               = var.ses_from_address
    SHOPSTREAM_SUPPLIER_NOTIFIER      = var.supplier_notifier
    SHOPSTREAM_SUPPLIER_SNS_TOPIC_ARN = aws_sns_topic.supplier_alerts.arn
    SHOPSTREAM_JWKS_URL               = local.jwks_url
    SHOPSTREAM_JWKS_ISSUER            = local.jwks_issuer
    SHOPSTREAM_JWKS_AUDIENCE          = aws_cognito_user_pool_client.storefront.id
    SHOPSTREAM_OIDC_CLIENT_ID         = aws_cognito_user_pool_client.pages.id
    SHOPSTREAM_PUBLIC_URL             = var.public_url
    SHOPSTREAM_LISTEN                 = "0.0.0.0:8080"
    SHOPSTREAM_METRICS_LISTEN         = "127.0.0.1:9090"
    SHOPSTREAM_LOG_FORMAT             = "json"
    SHOPSTREAM_TRUSTED_PROXIES        = var.vpc_cidr
    SHOPSTREAM_SEED_DEMO_CATALOGUE    = "false"
    SHOPSTREAM_ADMIN_EMAIL            = var.admin_email
    SHOPSTREAM_OTEL_ENDPOINT          = "http://127.0.0.1:4318"
    SHOPSTREAM_OTEL_SAMPLING_RATIO    = tostring(var.otel_sampling_ratio)
    SHOPSTREAM_SHUTDOWN_GRACE_SECS    = tostring(var.stop_timeout_secs - 5)
    AWS_REGION                        = var.region
  }
}

resource "aws_cloudwatch_log_group" "metrics" {
  name              = "/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_ecs_task_definition" "shopstream" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "data"
  }
  container_definitions = jsonencode([
    {
      name                   = "shopstream"
      image                  = "${aws_ecr_repository.shopstream.repository_url}:${var.image_tag}"
      essential              = true
      readonlyRootFilesystem = true
      stopTimeout            = var.stop_timeout_secs
      portMappings           = [{ containerPort = 8080, protocol = "tcp" }]
      environment            = [for k, v in local.environment : { name = k, value = v }]
      secrets = [
        { name = "SHOPSTREAM_JWT_SECRET", valueFrom = aws_ssm_parameter.jwt_secret.arn },
        { name = "SHOPSTREAM_ADMIN_PASSWORD", valueFrom = aws_ssm_parameter.admin_password.arn },
        { name = "SHOPSTREAM_OIDC_CLIENT_SECRET", valueFrom = aws_ssm_parameter.oidc_client_secret.arn },
      ]
      mountPoints = [{ sourceVolume = "data", containerPath = "/var/lib/shopstream" }]
      dependsOn   = [{ containerName = "otel-collector", condition = "START" }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "shopstream"
        }
      }
    },
    {
      name                   = "otel-collector"
      image                  = var.adot_image
      essential              = false
      readonlyRootFilesystem = true
      environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.adot_config }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "otel"
        }
      }
    },
  ])
}

resource "aws_ecs_service" "shopstream" {
  name                              = var.name
  cluster                           = aws_ecs_cluster.main.id
  task_definition                   = aws_ecs_task_definition.shopstream.arn
  desired_count                     = var.min_tasks
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = 60
  propagate_tags                    = "SERVICE"
  enable_execute_command            = false

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.shopstream.arn
    container_name   = "shopstream"
    container_port   = 8080
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    # Autoscaling moves it.
    ignore_changes = [desired_count]
  }
  depends_on = [aws_lb_listener.https]
}

resource "aws_lb" "main" {
  name                       = var.name
  load_balancer_type         = "application"
  subnets                    = aws_subnet.public[*].id
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  # Websockets stay open while frames flow; pings every ws_ping_secs keep
  # an idle one alive well within this.
  idle_timeout = 3600

  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "alb"
    enabled = true
  }
}

resource "aws_lb_target_group" "shopstream" {
  name                 = var.name
  port                 = 8080
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = 20

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.shopstream.arn
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.main.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_wafv2_web_acl" "main" {
  name  = var.name
  scope = "REGIONAL"
  default_action {
    allow {}
  }

  rule {
    name     = "AWSManagedRulesAmazonIpReputationList"
    priority = 1
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAmazonIpReputationList"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "AWSManagedRulesAmazonIpReputationList"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "AWSManagedRulesCommonRuleSet"
    priority = 2
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
        # Product images are uploaded in the body (image_max_bytes); the
        # common rule set's 8 KB body limit would block them. The service
        # bounds every body itself (max_body_bytes, image_max_bytes).
        rule_action_override {
          name = "SizeRestrictions_BODY"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "AWSManagedRulesCommonRuleSet"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "AWSManagedRulesKnownBadInputsRuleSet"
    priority = 3
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "AWSManagedRulesKnownBadInputsRuleSet"
      sampled_requests_enabled   = true
    }
  }

  # Anonymizers (Tor, anonymous proxies) are blocked; requests from hosting
  # providers are only counted (shops have customers behind corporate and
  # cloud egress; bots from there meet the rate rule).
  rule {
    name     = "AWSManagedRulesAnonymousIpList"
    priority = 4
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAnonymousIpList"
        rule_action_override {
          name = "HostingProviderIPList"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "AWSManagedRulesAnonymousIpList"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "rate-per-address"
    priority = 10
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit
        aggregate_key_type = "IP"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "rate-per-address"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = var.name
    sampled_requests_enabled   = true
  }
}

resource "aws_wafv2_web_acl_association" "alb" {
  resource_arn = aws_lb.main.arn
  web_acl_arn  = aws_wafv2_web_acl.main.arn
}

resource "aws_cloudwatch_log_group" "waf" {
  # WAF requires the aws-waf-logs- prefix.
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_wafv2_web_acl_logging_configuration" "main" {
  resource_arn            = aws_wafv2_web_acl.main.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }
}

resource "aws_appautoscaling_target" "service" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.shopstream.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_tasks
  max_capacity       = var.max_tasks
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  service_namespace  = aws_appautoscaling_target.service.service_namespace
  resource_id        = aws_appautoscaling_target.service.resource_id
  scalable_dimension = aws_appautoscaling_target.service.scalable_dimension
  policy_type        = "TargetTrackingScaling"
  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

# More readers when the stream's consumers fall behind: one task more per
# alarm period while the iterator age stays above the threshold.
resource "aws_appautoscaling_policy" "lag" {
  name               = "${var.name}-iterator-age"
  service_namespace  = aws_appautoscaling_target.service.service_namespace
  resource_id        = aws_appautoscaling_target.service.resource_id
  scalable_dimension = aws_appautoscaling_target.service.scalable_dimension
  policy_type        = "StepScaling"
  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 120
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "lag_scale_out" {
  alarm_name          = "${var.name}-iterator-age-scale-out"
  alarm_description   = "Consumers behind: add a task"
  namespace           = "AWS/Kinesis"
  metric_name         = "GetRecords.IteratorAgeMilliseconds"
  dimensions          = { StreamName = aws_kinesis_stream.events.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  threshold           = var.iterator_age_scale_out_ms
  comparison_operator = "GreaterThanThreshold"
  alarm_actions       = [aws_appautoscaling_policy.lag.arn]
}
