//! [`Reviews`] against the Kubernetes API: TokenReview and SubjectAccessReview.

use super::{Access, AuthError, Reviews, UserInfo};
use async_trait::async_trait;
use hsm_api::GROUP;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use secrecy::{ExposeSecret, SecretString};

/// The reviews, made with the manager's own client (it needs `tokenreviews` and
/// `subjectaccessreviews` `create`).
#[derive(Clone)]
pub struct KubeReviews {
    client: kube::Client,
}

impl KubeReviews {
    /// Reviews through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeReviews { client }
    }
}

#[async_trait]
impl Reviews for KubeReviews {
    async fn token_review(&self, token: &SecretString) -> Result<Option<UserInfo>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.expose_secret().to_owned(),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::TokenReview)?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        Ok(Some(UserInfo {
            username: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
        }))
    }

    async fn access_review(
        &self,
        user: &UserInfo,
        access: &Access,
        namespace: &str,
    ) -> Result<bool, AuthError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    resource: Some(access.resource.to_owned()),
                    subresource: access.subresource.map(str::to_owned),
                    verb: Some(access.verb.to_owned()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::AccessReview)?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}
