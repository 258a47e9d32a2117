//! The futures of the hand-written middleware (the auth guard, the request limits, the 413
//! shapers). `axum::middleware::from_fn` boxes a clone of the inner service and each
//! request's future; these wrap the inner service's future as it is and box only on the
//! rare paths that must await something of their own (a queued request, a webhook body, a
//! response of unknown length).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// What a middleware does with the answer of the service it wraps, once that is ready.
pub trait Finish {
    /// The answer sent on, made from `response`.
    fn finish(self, response: Response) -> Response;
}

/// Nothing to do when `None`.
impl<M: Finish> Finish for Option<M> {
    fn finish(self, response: Response) -> Response {
        match self {
            Some(finish) => finish.finish(response),
            None => response,
        }
    }
}

/// A middleware that notes what it needs of each request, then finishes the inner
/// service's answer with it.
pub trait Finisher: Clone {
    /// What finishes one answer.
    type Finish: Finish;

    /// What finishes the answer to `request`.
    fn start(&self, request: &Request) -> Self::Finish;
}

/// A [`Finisher`] as a layer.
#[derive(Clone)]
pub struct FinishLayer<P>(pub P);

impl<S, P: Clone> Layer<S> for FinishLayer<P> {
    type Service = Finished<S, P>;

    fn layer(&self, inner: S) -> Finished<S, P> {
        Finished {
            inner,
            finisher: self.0.clone(),
        }
    }
}

/// `inner` with each answer finished by a [`Finisher`].
#[derive(Clone)]
pub struct Finished<S, P> {
    inner: S,
    finisher: P,
}

impl<S, P> Service<Request> for Finished<S, P>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    P: Finisher,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Finishing<S::Future, P::Finish>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let finish = self.finisher.start(&request);
        Finishing::new(self.inner.call(request), finish)
    }
}

pin_project! {
    /// The inner service's future, then [`Finish`] on its answer.
    pub struct Finishing<F, M> {
        #[pin]
        inner: F,
        finish: Option<M>,
    }
}

impl<F, M> Finishing<F, M> {
    /// `inner`, whose answer goes through `finish`.
    pub fn new(inner: F, finish: M) -> Self {
        Finishing {
            inner,
            finish: Some(finish),
        }
    }
}

impl<F, M> Future for Finishing<F, M>
where
    F: Future<Output = Result<Response, Infallible>>,
    M: Finish,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        Poll::Ready(Ok(match this.finish.take() {
            Some(finish) => finish.finish(response),
            None => response,
        }))
    }
}

pin_project! {
    /// A middleware's answer: the inner service's, one it made itself without calling it,
    /// or (rarely) one that awaits something first.
    #[project = AnswerProj]
    pub enum Answer<F> {
        /// The inner service's future.
        Inner { #[pin] future: F },
        /// An answer made without the inner service (a refusal).
        Ready { response: Option<Response> },
        /// A path that awaits something of its own first (boxed: taken rarely).
        Boxed { future: BoxFuture<'static, Response> },
    }
}

impl<F> Answer<F> {
    /// `response`, without calling the inner service.
    pub fn ready(response: Response) -> Self {
        Answer::Ready {
            response: Some(response),
        }
    }

    /// The answer of `future`, boxed.
    pub fn boxed(future: impl Future<Output = Response> + Send + 'static) -> Self {
        Answer::Boxed {
            future: Box::pin(future),
        }
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Inner { future } => future.poll(cx),
            AnswerProj::Ready { response } => Poll::Ready(Ok(response.take().unwrap_or_default())),
            AnswerProj::Boxed { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}
