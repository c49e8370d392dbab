//! trailwatch's own rule pack (`rules/trailwatch`), compiled in: the detect Lambda runs it
//! without a rules location, and `RULES=bundled` names it. A test keeps this list equal to the folder.

/// (file, text) of every rule of the pack.
pub const PACK: &[(&str, &str)] = &[
    (
        "trailwatch/aws_bedrock_model_access_enabled.yml",
        include_str!("../../../rules/trailwatch/aws_bedrock_model_access_enabled.yml"),
    ),
    (
        "trailwatch/aws_cloudtrail_event_selectors_reduced.yml",
        include_str!("../../../rules/trailwatch/aws_cloudtrail_event_selectors_reduced.yml"),
    ),
    (
        "trailwatch/aws_ec2_accelerated_instances_requested.yml",
        include_str!("../../../rules/trailwatch/aws_ec2_accelerated_instances_requested.yml"),
    ),
    ("trailwatch/aws_ec2_ami_shared.yml", include_str!("../../../rules/trailwatch/aws_ec2_ami_shared.yml")),
    (
        "trailwatch/aws_ec2_password_data_requested.yml",
        include_str!("../../../rules/trailwatch/aws_ec2_password_data_requested.yml"),
    ),
    ("trailwatch/aws_ec2_ssh_key_pushed.yml", include_str!("../../../rules/trailwatch/aws_ec2_ssh_key_pushed.yml")),
    (
        "trailwatch/aws_ec2_user_data_changed_or_read.yml",
        include_str!("../../../rules/trailwatch/aws_ec2_user_data_changed_or_read.yml"),
    ),
    (
        "trailwatch/aws_iam_admin_policy_attached.yml",
        include_str!("../../../rules/trailwatch/aws_iam_admin_policy_attached.yml"),
    ),
    (
        "trailwatch/aws_iam_login_profile_created_for_user.yml",
        include_str!("../../../rules/trailwatch/aws_iam_login_profile_created_for_user.yml"),
    ),
    (
        "trailwatch/aws_iam_role_trust_policy_opened.yml",
        include_str!("../../../rules/trailwatch/aws_iam_role_trust_policy_opened.yml"),
    ),
    (
        "trailwatch/aws_lambda_code_updated_outside_pipeline.yml",
        include_str!("../../../rules/trailwatch/aws_lambda_code_updated_outside_pipeline.yml"),
    ),
    (
        "trailwatch/aws_lambda_function_policy_public.yml",
        include_str!("../../../rules/trailwatch/aws_lambda_function_policy_public.yml"),
    ),
    ("trailwatch/aws_organizations_leave.yml", include_str!("../../../rules/trailwatch/aws_organizations_leave.yml")),
    ("trailwatch/aws_rds_snapshot_shared.yml", include_str!("../../../rules/trailwatch/aws_rds_snapshot_shared.yml")),
    (
        "trailwatch/aws_rolesanywhere_trust_anchor_created.yml",
        include_str!("../../../rules/trailwatch/aws_rolesanywhere_trust_anchor_created.yml"),
    ),
    (
        "trailwatch/aws_route53_resolver_query_logging_deleted.yml",
        include_str!("../../../rules/trailwatch/aws_route53_resolver_query_logging_deleted.yml"),
    ),
    (
        "trailwatch/aws_secretsmanager_bulk_retrieval.yml",
        include_str!("../../../rules/trailwatch/aws_secretsmanager_bulk_retrieval.yml"),
    ),
    (
        "trailwatch/aws_ssm_securestring_bulk_retrieval.yml",
        include_str!("../../../rules/trailwatch/aws_ssm_securestring_bulk_retrieval.yml"),
    ),
    ("trailwatch/aws_ssm_session_started.yml", include_str!("../../../rules/trailwatch/aws_ssm_session_started.yml")),
    ("trailwatch/aws_sts_federation_token.yml", include_str!("../../../rules/trailwatch/aws_sts_federation_token.yml")),
];
