//! `content.v0.ContentService` over the content service.

use proto::content::v0 as pb;
use proto::content::v0::content_service_server::{ContentService, ContentServiceServer};
use proto::convert;
use services::content::model::{
    Comment, Content, ContentPatch, Kind, NewComment, NewContent, ReactionCounts,
};
use tonic::{Request, Response, Status};

use super::{GrpcState, bad_json, caller, cursor, internal_json, limit, status};

pub fn server(state: GrpcState) -> ContentServiceServer<Contents> {
    ContentServiceServer::new(Contents(state))
}

pub struct Contents(GrpcState);

fn content_pb(c: Content) -> Result<pb::Content, Status> {
    Ok(pb::Content {
        id: c.id,
        kind: c.kind.as_str().to_owned(),
        author_id: c.author_id,
        title: c.title,
        body: c.body,
        url: c.url,
        tags: c.tags,
        metadata: Some(
            convert::metadata_from_json(convert::lossy(c.metadata)).map_err(internal_json)?,
        ),
        created_at: c.created_at,
        updated_at: c.updated_at,
    })
}

fn comment_pb(c: Comment) -> pb::Comment {
    pb::Comment {
        id: c.id,
        content_id: c.content_id,
        parent_id: c.parent_id,
        author_id: c.author_id,
        body: c.body,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn counts_pb(r: ReactionCounts) -> pb::ReactionCounts {
    pb::ReactionCounts {
        content_id: r.content_id,
        counts: r.counts.into_iter().collect(),
        mine: r.mine,
    }
}

#[tonic::async_trait]
impl ContentService for Contents {
    async fn create_content(
        &self,
        req: Request<pb::CreateContentRequest>,
    ) -> Result<Response<pb::Content>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewContent {
            kind: r.kind,
            title: r.title,
            body: r.body,
            url: r.url,
            tags: r.tags,
            metadata: r
                .metadata
                .map(convert::metadata_to_json)
                .transpose()
                .map_err(|e| bad_json("metadata", e))?,
        };
        let c = self
            .0
            .services
            .content
            .create(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(content_pb(c)?))
    }

    async fn get_content(
        &self,
        req: Request<pb::GetContentRequest>,
    ) -> Result<Response<pb::Content>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .content
            .get(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(content_pb(c)?))
    }

    async fn update_content(
        &self,
        req: Request<pb::UpdateContentRequest>,
    ) -> Result<Response<pb::Content>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        if r.clear_url && r.url.is_some() {
            return Err(Status::invalid_argument(
                "url and clear_url exclude each other",
            ));
        }
        let patch = ContentPatch {
            title: r.title,
            body: r.body,
            url: if r.clear_url {
                Some(None)
            } else {
                r.url.map(Some)
            },
            tags: r.replace_tags.then_some(r.tags),
            metadata: r
                .metadata_patch
                .map(convert::struct_to_json)
                .transpose()
                .map_err(|e| bad_json("metadata_patch", e))?,
        };
        let c = self
            .0
            .services
            .content
            .update(&caller, &r.id, patch)
            .await
            .map_err(status)?;
        Ok(Response::new(content_pb(c)?))
    }

    async fn delete_content(
        &self,
        req: Request<pb::DeleteContentRequest>,
    ) -> Result<Response<pb::DeleteContentResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        self.0
            .services
            .content
            .delete(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteContentResponse {}))
    }

    async fn list_content(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<pb::ListContentResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let kind = r
            .kind
            .as_deref()
            .map(Kind::parse)
            .transpose()
            .map_err(status)?;
        let page = self
            .0
            .services
            .content
            .list(
                &caller,
                kind,
                r.author_id.as_deref(),
                limit(r.limit),
                cursor(&r.cursor),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListContentResponse {
            items: page
                .items
                .into_iter()
                .map(content_pb)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn search_content(
        &self,
        req: Request<pb::SearchContentRequest>,
    ) -> Result<Response<pb::SearchContentResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .content
            .search(&caller, &r.query, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        let mut hits = Vec::with_capacity(page.items.len());
        for h in page.items {
            hits.push(pb::SearchHit {
                content: Some(content_pb(h.content)?),
                rank: h.rank,
                snippet: h.snippet,
            });
        }
        Ok(Response::new(pb::SearchContentResponse {
            hits,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn add_comment(
        &self,
        req: Request<pb::AddCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewComment {
            parent_id: r.parent_id,
            body: r.body,
        };
        let c = self
            .0
            .services
            .content
            .add_comment(&caller, &r.content_id, new)
            .await
            .map_err(status)?;
        Ok(Response::new(comment_pb(c)))
    }

    async fn list_comments(
        &self,
        req: Request<pb::ListCommentsRequest>,
    ) -> Result<Response<pb::ListCommentsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .content
            .list_comments(&caller, &r.content_id, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListCommentsResponse {
            comments: page.items.into_iter().map(comment_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_comment(
        &self,
        req: Request<pb::GetCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .content
            .get_comment(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(comment_pb(c)))
    }

    async fn update_comment(
        &self,
        req: Request<pb::UpdateCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let c = self
            .0
            .services
            .content
            .update_comment(&caller, &r.id, &r.body)
            .await
            .map_err(status)?;
        Ok(Response::new(comment_pb(c)))
    }

    async fn delete_comment(
        &self,
        req: Request<pb::DeleteCommentRequest>,
    ) -> Result<Response<pb::DeleteCommentResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        self.0
            .services
            .content
            .delete_comment(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteCommentResponse {}))
    }

    async fn react(
        &self,
        req: Request<pb::ReactRequest>,
    ) -> Result<Response<pb::ReactionCounts>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let counts = self
            .0
            .services
            .content
            .react(&caller, &r.content_id, &r.kind)
            .await
            .map_err(status)?;
        Ok(Response::new(counts_pb(counts)))
    }

    async fn unreact(
        &self,
        req: Request<pb::UnreactRequest>,
    ) -> Result<Response<pb::ReactionCounts>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let counts = self
            .0
            .services
            .content
            .unreact(&caller, &r.content_id, &r.kind)
            .await
            .map_err(status)?;
        Ok(Response::new(counts_pb(counts)))
    }

    async fn get_reactions(
        &self,
        req: Request<pb::GetReactionsRequest>,
    ) -> Result<Response<pb::ReactionCounts>, Status> {
        let caller = caller(&self.0, &req)?;
        let counts = self
            .0
            .services
            .content
            .reactions(&caller, &req.into_inner().content_id)
            .await
            .map_err(status)?;
        Ok(Response::new(counts_pb(counts)))
    }
}
